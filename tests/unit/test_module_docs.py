"""Every module of plugins/modules documents itself: ansible-doc reads its DOCUMENTATION and
RETURN, and the options it documents are the ones its argument spec takes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = sorted((Path(__file__).parents[2] / "plugins/modules").glob("*.py"))
ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.stem)
def test_ansible_doc_reads_the_module_and_its_options_match_its_argument_spec(module: Path) -> None:
    proc = subprocess.run(
        [str(ANSIBLE_DOC), "-M", str(module.parent), "--json", module.stem],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "Unable to parse" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)[module.stem]["doc"]
    source = module.read_text()
    spec = source[source.index("argument_spec=") : source.index("supports_check_mode")]
    taken = set(re.findall(r'^ {12}"([a-z_]+)": \{', spec, re.MULTILINE))
    assert set(doc["options"]) == taken, (sorted(doc["options"]), sorted(taken))
