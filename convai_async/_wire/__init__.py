"""The wire format, pure: request bodies, response parsing, error choice and the converter."""
