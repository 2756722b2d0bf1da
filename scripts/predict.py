#!/usr/bin/env python3
"""The same as the console command jaxnet-predict (jaxnet/commands/predict.py)."""
from jaxnet.commands.predict import main

if __name__ == "__main__":
    main()
