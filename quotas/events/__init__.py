"""Events and webhooks (DESIGN §7a): an append-only outbox written in the
transaction that caused each event, a feed that reads it in order, and signed
webhook deliveries. A Django app of its own (label ``events``) inside the quotas
package: both the quota services and the allocation engine write to it, and it
imports nothing of ``allocations``.
"""
