#!/usr/bin/env python3
"""entragate's CLI: `python tools/entragate.py {check,compile,explain,test,schema,assertion-key} --help`.

A launcher so the CLI runs from a checkout without installing anything: it puts the edge
package (src/) and the build-time tools (tools/) on the path and hands over.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tools")]

from entragate_tools.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
