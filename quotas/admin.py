from django.contrib import admin

from quotas.models import ApiKey, Quota, ResourceType

admin.site.register(ResourceType)
admin.site.register(Quota)
admin.site.register(ApiKey)
