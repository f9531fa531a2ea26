"""Start sushy-emulator with the fake driver made predictable and observable for tests.

HECATE_FAKE_POWER_DELAY=N: power transitions take N seconds instead of a random 1..11 s
  (0 = visible on the next GET; a large number = a BMC that accepts a reset but never acts).
HECATE_IGNORE_GRACEFUL=1: GracefulShutdown is accepted (204) and ignored, like an OS that
  does not answer the ACPI power button; ForceOff still works.
HECATE_RESET_LOG=FILE: every ResetType the driver is asked for is appended to FILE, one a line,
  before the emulator answers.
"""
import os, sys
from sushy_tools.emulator.resources.systems import fakedriver

_d = os.environ.get('HECATE_FAKE_POWER_DELAY')
if _d is not None:
    class _R:
        @staticmethod
        def randint(a, b): return int(_d)
    fakedriver.random = _R

_set = fakedriver.FakeDriver.set_power_state
_ignore_graceful = os.environ.get('HECATE_IGNORE_GRACEFUL') == '1'
_reset_log = os.environ.get('HECATE_RESET_LOG')

def _set_power_state(self, identity, state):
    self._get(identity)  # an unknown system still answers 404, and is not logged
    if _reset_log:
        with open(_reset_log, 'a') as f:
            f.write(state + '\n')
    if _ignore_graceful and state == 'GracefulShutdown':
        return
    return _set(self, identity, state)

fakedriver.FakeDriver.set_power_state = _set_power_state

from sushy_tools.emulator.main import main
sys.exit(main())
