"""`python -m pylenet` runs the command line."""
import sys

from pylenet.cli import main

sys.exit(main())
