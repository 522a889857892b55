"""Worker processes that drive one binding each, for the binding conformance suite."""
