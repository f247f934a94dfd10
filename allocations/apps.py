from django.apps import AppConfig


class AllocationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "allocations"
    verbose_name = "Allocations"

    def ready(self):
        # Dependencies run one way: this app listens to the quota services rather
        # than being imported by them.
        from allocations.services import (
            recompute_consumed_on_period_change,
            refuse_quota_delete_while_allocated,
        )
        from quotas.services import quota_deleting, quota_period_changed

        quota_deleting.connect(
            refuse_quota_delete_while_allocated,
            dispatch_uid="allocations.refuse_quota_delete_while_allocated",
        )
        quota_period_changed.connect(
            recompute_consumed_on_period_change,
            dispatch_uid="allocations.recompute_consumed_on_period_change",
        )
