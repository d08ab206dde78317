"""docs/write_your_own.md: its code blocks run as one script and print what they say."""

import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).parent.parent / "docs" / "write_your_own.md"


def test_the_page_runs_and_prints_what_its_comments_say(tmp_path):
    text = DOC.read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.DOTALL))
    script = tmp_path / "write_your_own.py"
    script.write_text(code)
    # A fresh process: the page registers classes, which must not leak into this session.
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    promised = re.findall(r"^\s*print\(.*\)\s+# (.+)$", code, re.MULTILINE)
    assert len(promised) >= 3
    for line in promised:
        assert line.strip() in result.stdout, f"{line!r} not printed:\n{result.stdout}"
    assert "name: my_lion\n" in result.stdout
