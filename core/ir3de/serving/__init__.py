"""What adapters and the gateway share: the expert -> handler registry, recent routes and feedback, sessions."""
