"""Reading text: corpus and labelled-file readers (one per format) and the public datasets."""
