"""`python -m posttrain.cli ...` (what `accelerate launch -m posttrain.cli sft ...` runs on every process)."""

from posttrain.cli import main

if __name__ == "__main__":
    main()
