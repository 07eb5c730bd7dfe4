"""End-to-end jobs behind the CLI: download, train, analyze, submit, demo, and the train config."""
