"""python -m b2bscore."""

from b2bscore.cli import main

main()
