"""Webhooks: endpoints, Standard Webhooks signing, the event outbox and its deliveries."""
