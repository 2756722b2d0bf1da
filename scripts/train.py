#!/usr/bin/env python3
"""The same as the console command jaxnet-train (jaxnet/commands/train.py)."""
from jaxnet.commands.train import main

if __name__ == "__main__":
    main()
