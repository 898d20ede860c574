from django.db import models


class Receipt(models.Model):
    order = models.CharField(max_length=100, unique=True)
    total = models.IntegerField()


class Event(models.Model):
    """What the task signals reported, as the worker saw them."""

    name = models.CharField(max_length=20)
    task_id = models.CharField(max_length=64)
    status = models.CharField(max_length=20)
