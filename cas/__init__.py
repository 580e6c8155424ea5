"""cas: a content-addressed storage network."""
