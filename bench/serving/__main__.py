"""`python -m bench.serving`: see bench/serving/run.py."""

from bench.serving.run import main

main()
