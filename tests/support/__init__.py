"""Helpers shared by the tests, in one place: image folders, tiny datasets, an S3 server, commands."""
