import asyncio
import os
from pathlib import Path

from conveyor.contrib.django._compat import TaskContext

try:
    from django.tasks import task
    from django.tasks.signals import task_finished
except ImportError:
    from django_tasks import task
    from django_tasks.signals import task_finished

from django.dispatch import receiver

from shop.models import Event, Receipt

MARKS = Path(os.environ["SHOP_DIR"]) / "marks"


@task()
def add(a: int, b: int) -> int:
    (MARKS / f"add-{a + b}").write_text("")
    return a + b


@task(queue_name="emails")
def send_receipt(order: str, *, total: int = 0) -> None:
    Receipt.objects.create(order=order, total=total)


@task()
async def ping(text: str) -> str:
    await asyncio.sleep(0)
    (MARKS / f"ping-{text}").write_text("")
    return text


@task(takes_context=True)
def attempt(context: TaskContext, label: str) -> None:
    (MARKS / f"attempt-{label}-{context.task_result.id}-{context.attempt}").write_text("")


@task()
def explode() -> None:
    raise RuntimeError("kaboom")


def not_a_task() -> None:
    (MARKS / "not-a-task").write_text("")


@receiver(task_finished)
def remember(sender: object, task_result: object, **kwargs: object) -> None:
    Event.objects.create(
        name=task_result.task.name,
        task_id=task_result.id,
        status=str(task_result.status),
    )
