"""Small builders shared by the tests: generated images and folders."""
