"""One module per dashboard page; see ``dashboard.app`` for the contract each follows."""
