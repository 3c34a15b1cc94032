"""Every code block of ``README.md`` and of the guides (``docs/guides/*.md``) is true as written.

* Each ```` ```python ```` block runs, as written, in a fresh namespace named ``__main__``
  (blocks never depend on each other, so a reader can copy any one of them into a script),
  under JAX's default configuration
  (float32; the ``default_jax_config`` fixture of the root ``conftest.py``), with warnings as
  errors, in an empty temporary working directory. Any failure fails, a missing module
  included: README blocks use only the package and what its ``dev`` extra installs.
* ```` ```bash ```` blocks are not run (they install packages and take minutes); the modules
  they run with ``python -m`` must exist and the files they name must be in the repository.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shlex

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def readme_blocks(text: str) -> list[dict]:
    """Fenced code blocks of a Markdown text: ``lang``, ``code``, ``line`` (1-based line of
    the opening fence) and ``heading`` (the nearest heading above it)."""
    blocks, heading, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _FENCE.match(line)
        if match is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        info = match["info"].strip()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"README.md:{i + 1}: code block is never closed")
        lang = info.split()[0].lower() if info else ""
        blocks.append({"lang": lang, "code": "\n".join(body) + "\n", "line": i + 1, "heading": heading})
        i = j + 1
    return blocks


PAGES = [README] + sorted((REPO / "docs" / "guides").glob("*.md"))
BLOCKS = [
    {**block, "page": page.relative_to(REPO).as_posix()}
    for page in PAGES
    for block in readme_blocks(page.read_text(encoding="utf-8"))
]
PYTHON = [b for b in BLOCKS if b["lang"] in ("python", "py", "python3")]
BASH = [b for b in BLOCKS if b["lang"] in ("bash", "sh", "shell", "console")]


def _block_id(block: dict) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", block["heading"].lower()).strip("-") or "top"
    page = block["page"].replace("docs/guides/", "").replace(".md", "")
    return f"{page}-L{block['line']}-{slug}"


def test_readme_has_python_and_bash_blocks():
    assert len(PYTHON) >= 5 and len(BASH) >= 2, [(b["lang"], b["line"]) for b in BLOCKS]
    assert {b["lang"] for b in BLOCKS} <= {"python", "py", "python3", "bash", "sh", "shell",
                                            "console", "", "text"}, "a block of an unknown language"


def test_block_parser_handles_indented_fences_and_headings():
    text = "# A\n```python\nx = 1\n```\n## B c\n- item\n  ```bash\n  ls\n  ```\n````\nraw\n````\n"
    got = [(b["lang"], b["code"], b["line"], b["heading"]) for b in readme_blocks(text)]
    assert got == [("python", "x = 1\n", 2, "A"), ("bash", "ls\n", 7, "B c"), ("", "raw\n", 10, "B c")]
    with pytest.raises(ValueError, match="never closed"):
        readme_blocks("```python\nx = 1\n")


@pytest.mark.parametrize("block", PYTHON, ids=[_block_id(b) for b in PYTHON])
def test_python_block_runs(block, default_jax_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(block["code"], f"{block['page']} (block at line {block['line']})", "exec")
    exec(code, {"__name__": "__main__"})  # as if pasted into a script and run


@pytest.mark.parametrize("block", BASH, ids=[_block_id(b) for b in BASH])
def test_bash_block_names_real_modules_and_files(block):
    for line in block["code"].splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = shlex.split(line)
        for k, word in enumerate(words):
            if word == "-m" and k > 0 and words[k - 1].startswith("python"):
                module = words[k + 1]
                assert importlib.util.find_spec(module) is not None, (block["line"], module)
            if re.search(r"\.(sh|py|ipynb|toml)$", word) and "<" not in word:
                assert (REPO / word).exists(), (block["line"], word)
