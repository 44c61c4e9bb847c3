"""First-party backends, registered through the same hooks a third party uses."""
