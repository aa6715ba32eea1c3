"""`python -m scalevid.cli ...`, as torchrun starts it."""

import sys

from scalevid.cli.app import main

sys.exit(main())
