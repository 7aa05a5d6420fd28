"""The one fitting pipeline: counting -> statistics -> solve -> route table, plus traffic blocks (pure, arrays in and out)."""
