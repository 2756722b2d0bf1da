#!/usr/bin/env python3
"""The same as the console command jaxnet-search (jaxnet/commands/search.py)."""
from jaxnet.commands.search import main

if __name__ == "__main__":
    main()
