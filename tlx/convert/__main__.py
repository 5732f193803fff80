"""`python -m tlx.convert import-hf|export-hf ...`"""

from tlx.convert import main

main()
