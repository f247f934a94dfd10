from rest_framework import permissions

from quotas.models import ApiKeyRole


class RolePermission(permissions.BasePermission):
    """Reads need any valid key; a write needs one of the view's ``write_roles``
    (admin only unless the view says otherwise)."""

    message = "Your API key's role does not allow this."

    def has_permission(self, request, view):
        key = request.auth
        if key is None:
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        allowed = getattr(view, "write_roles", {ApiKeyRole.ADMIN})
        return key.role in allowed


class AdminRolePermission(permissions.BasePermission):
    """Every method, reads included, needs an admin key (webhook endpoints: their
    URLs and delivery logs are an admin's business)."""

    message = RolePermission.message

    def has_permission(self, request, view):
        key = request.auth
        return key is not None and key.role == ApiKeyRole.ADMIN
