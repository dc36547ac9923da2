# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The project's default strategy: Ansible's linear strategy, run through Mitogen.

Mitogen (pinned in requirements.txt) keeps one Python interpreter per host and sends
modules over it, instead of starting a new interpreter that unpacks and compiles the
module and Ansible's module_utils for every task. The playbooks and their results are
those of the linear strategy; a re-run of the DB tier takes well under half the time
(docs/BENCHMARKS.md). Mitogen only takes over the remote connection types it knows (ssh,
docker, ...; not local); any other connection runs as usual.

Without the mitogen package, or with DINE360_MITOGEN=0 in the environment, this is
Ansible's own linear strategy.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible.plugins.strategy.linear import StrategyModule as _Linear

try:
    if os.environ.get("DINE360_MITOGEN", "1") == "0":
        raise ImportError("disabled by DINE360_MITOGEN=0")
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:
    StrategyModule = _Linear
else:
    # Mitogen takes over the remote transports (docker, ssh, ...) only. Tasks on the
    # controller run as Ansible runs them: Mitogen's async jobs on the local connection
    # ignore ansible_async_dir, so molecule's destroy waited forever for its own job.
    ansible_mitogen.strategy.REDIRECTED_CONNECTION_PLUGINS = tuple(
        name for name in ansible_mitogen.strategy.REDIRECTED_CONNECTION_PLUGINS if name != "local")
    _Base = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Base):
        """Mitogen's linear strategy."""
