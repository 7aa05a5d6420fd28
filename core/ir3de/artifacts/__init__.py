"""The router on disk and on the Hub: folder format, save/load, Hub transport, model cards, stat packs, revisions."""
