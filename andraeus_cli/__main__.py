"""`python -m andraeus_cli ...` runs the `andraeus` command."""

import sys

from .cli import main

sys.exit(main())
