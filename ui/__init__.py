"""Dashboard building blocks: page logic that tests can call, kept out of the page files."""
