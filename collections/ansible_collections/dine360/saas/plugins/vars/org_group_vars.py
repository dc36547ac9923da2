# -*- coding: utf-8 -*-

# Copyright: (c) 2025, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: org_group_vars
short_description: Load organisation-wide group_vars for every inventory
version_added: "0.1.0"
author:
  - dine360.saas engineers (@dine360)
description:
  - Ansible only loads C(group_vars/) that sit beside the inventory source or beside the playbook.
    This plugin also loads one organisation-wide C(group_vars/) directory for every inventory,
    whatever inventory and playbook are used.
  - The directory is O(org_vars_dir) when set, otherwise the C(group_vars/) directory beside the
    C(ansible.cfg) in use. When that directory does not exist the plugin adds nothing.
  - For every group it loads C(<dir>/<group>.yml), C(<dir>/<group>.yaml), C(<dir>/<group>.json)
    or every file below C(<dir>/<group>/), exactly like P(ansible.builtin.host_group_vars#vars) does.
    The extensions follow C(yaml_valid_extensions) in C([defaults]); files without an extension
    are read too. Hidden files and backups (ending in C(~)) are ignored. Nothing is loaded for hosts; there is
    no organisation-wide C(host_vars/).
  - The values are the lowest layer of group variables. Variables set for the same group in the
    inventory source itself, in the inventory's C(group_vars/) and in the playbook's
    C(group_vars/) all override them.
  - Enable it before P(ansible.builtin.host_group_vars#vars) in C(vars_plugins_enabled), for
    example C(vars_plugins_enabled = dine360.saas.org_group_vars, host_group_vars).
notes:
  - The plugin runs once per inventory source after the inventory is parsed (O(stage=inventory)),
    and the loaded values are stored with the groups. Do not set O(stage) to V(task) or V(all);
    the plugin would then also run for the playbook's directory, at the precedence of
    playbook group_vars.
  - Files are loaded as trusted templates, as C(group_vars/) files are.
  - If the organisation directory is also the C(group_vars/) beside the inventory or the playbook
    (an inventory or a playbook at the repository root), P(ansible.builtin.host_group_vars#vars)
    loads the same files again at its own, higher, precedence.
options:
  org_vars_dir:
    description:
      - Path of the organisation-wide C(group_vars) directory itself (not of its parent).
      - When not set, C(group_vars) beside the C(ansible.cfg) in use is loaded.
      - When set to a path that does not exist, a warning is shown and nothing is loaded.
    type: path
    env:
      - name: DINE360_ORG_VARS_DIR
    ini:
      - key: org_vars_dir
        section: dine360_org_group_vars
  stage:
    default: inventory
    ini:
      - key: stage
        section: dine360_org_group_vars
extends_documentation_fragment:
  - ansible.builtin.vars_plugin_staging
"""

EXAMPLES = r"""
# ansible.cfg at the repository root, beside the organisation-wide group_vars/ directory:
#
#   [defaults]
#   collections_path = ./collections
#   vars_plugins_enabled = dine360.saas.org_group_vars, host_group_vars
#
# Any inventory and any playbook then see group_vars/all.yml of the repository root:
#
#   ansible-playbook -i inventories/prod playbooks/site.yml
#
# Use another organisation directory for one run:
#
#   DINE360_ORG_VARS_DIR=/srv/policy/group_vars ansible-inventory -i inventories/lab --host pg1
"""

import os

from ansible import constants as C
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.group import Group
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.vars import BaseVarsPlugin
from ansible.utils.vars import combine_vars

# Files found per (group name, organisation directory); organisation directories that are
# missing; canonical form of each configured path. Kept for the life of the process, like
# ansible.builtin.host_group_vars does.
FOUND = {}
NAK = set()
CANONICAL_PATHS = {}


def _load_from_file(loader, path):
    """Load one vars file as host_group_vars does, on every supported ansible-core."""
    try:
        # ansible-core >= 2.19: group_vars files are trusted templates.
        return loader.load_from_file(path, cache='all', unsafe=True, trusted_as_template=True)
    except TypeError:
        return loader.load_from_file(path, cache='all', unsafe=True)


class VarsModule(BaseVarsPlugin):

    is_stateless = True

    def _org_dir(self):
        """Return the canonical organisation group_vars directory, or None if there is none."""
        configured = self.get_option('org_vars_dir')
        explicit = bool(configured)
        if not explicit:
            config_file = C.CONFIG_FILE
            if not config_file:
                return None
            configured = os.path.join(os.path.dirname(config_file), 'group_vars')

        try:
            opath = CANONICAL_PATHS[configured]
        except KeyError:
            CANONICAL_PATHS[configured] = opath = os.path.realpath(configured)

        if opath in NAK:
            return None
        if os.path.isdir(opath):
            return opath
        if explicit:
            self._display.warning("dine360.saas.org_group_vars: org_vars_dir %s is not a directory, "
                                  "no organisation-wide group_vars are loaded" % to_native(opath))
        NAK.add(opath)
        return None

    def load_found_files(self, loader, data, found_files):
        for found in found_files:
            new_data = _load_from_file(loader, found)
            if new_data:  # ignore empty files
                try:
                    data = combine_vars(data, new_data)
                except AnsibleError as e:
                    raise AnsibleParserError("Could not process %r: %s" % (found, to_native(e)))
        return data

    def get_vars(self, loader, path, entities, cache=True):
        """Return the organisation-wide group_vars of the given groups.

        ``path`` is the inventory source directory; the organisation directory does not depend
        on it, so every source gets the same data.
        """
        if not isinstance(entities, list):
            entities = [entities]

        groups = [entity for entity in entities if isinstance(entity, Group)]
        if not groups:
            return {}

        opath = self._org_dir()
        if opath is None:
            return {}

        data = {}
        for group in groups:
            name = group.name
            if not name or name[0] == os.path.sep:
                continue
            key = (name, opath)
            try:
                if cache and key in FOUND:
                    found_files = FOUND[key]
                else:
                    FOUND[key] = found_files = loader.find_vars_files(opath, name)
                group_data = self.load_found_files(loader, {}, found_files)
            except AnsibleParserError:
                raise
            except Exception as e:
                raise AnsibleParserError("dine360.saas.org_group_vars: %s" % to_native(e))

            if group_data:
                # Variables set on the group by the inventory source itself win over the
                # organisation's: after parsing, the inventory combines what vars plugins return
                # over the group's own vars, so hand those back on top.
                group_data = combine_vars(group_data, group.get_vars())
                data = combine_vars(data, group_data)
        return data
