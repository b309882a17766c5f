"""`python -m sec_engine ...` (see `sec_engine.cli`)."""

from sec_engine.cli import main

main()
