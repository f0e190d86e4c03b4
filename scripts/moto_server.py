"""The moto server the tests and the demo run, with three fixes for gaps of moto 5.2.5.

1. moto executes a change set by updating the stack's resources, but never recomputes the
   stack's outputs or records the change set's parameters and tags on the stack: a stack created
   or updated through a change set describes itself with no outputs and stale parameters. AWS
   recomputes all three. Stackwright deploys only through change sets and wires stacks together
   through outputs, so the tests need them.
2. moto describes a `List<...>` or `CommaDelimitedList` parameter as a Python list ("['a', 'b']");
   AWS describes it as the comma-separated string it was given. Stackwright compares deployed
   parameters with the ones it would send to tell an unchanged stack.

3. moto serves requests on several threads, and its DynamoDB conditional writes check and then
   write without holding a lock: under load, concurrent conditional updates of one item can all
   pass their condition. DynamoDB applies each conditional write atomically, and Stackwright's
   lock depends on that, so writes to the emulated tables are serialized here.

The fixes are applied here, at start-up, rather than by working around them in the installer;
docs/testing.md lists them with the emulator's other gaps.
"""

import functools
import sys
import threading

from moto.cloudformation import models
from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_apply = models.ChangeSet.apply


def _apply_and_refresh_stack(self: models.ChangeSet) -> None:
    _apply(self)
    stack = self.stack
    stack.template = self.template
    stack._parse_template()
    if self.parameters:
        stack.parameters = self.parameters
    if self.tags is not None:
        stack.tags = self.tags
    stack.output_map = stack._create_output_map()


models.ChangeSet.apply = _apply_and_refresh_stack

_parameter_list = models.Stack.parameter_list.fget


def _parameter_list_as_given(self: models.Stack) -> list:
    return [
        {**parameter, "ParameterValue": ",".join(str(value) for value in parameter["ParameterValue"])}
        if isinstance(parameter["ParameterValue"], list)
        else parameter
        for parameter in _parameter_list(self)
    ]


models.Stack.parameter_list = property(_parameter_list_as_given)

_dynamodb_writes = threading.RLock()


def _atomic(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _dynamodb_writes:
            return method(*args, **kwargs)

    return wrapper


for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    setattr(DynamoDBBackend, _name, _atomic(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.exit(main())
