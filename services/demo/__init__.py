"""A demo feed: authority systems posting events to the column services over HTTP."""
