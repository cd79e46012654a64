"""The console's pages: one router per page (its queries live in ``erpsync.console.<page>``)."""
