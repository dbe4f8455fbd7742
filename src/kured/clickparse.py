"""Click's option parser with Go's rule for ``--flag=value``: what follows ``=`` is the value.

Go kured's booleans may stand alone (``--force-reboot``), which click models as an
option whose value is optional. Click then reads ``--force-reboot=-h`` as
``--force-reboot -h`` and shows the help, or names ``-0`` in ``--force-reboot=-0`` as
an unknown flag, instead of refusing the value. Go's flag package takes an attached
value as the value, always; so does this parser.
"""

from __future__ import annotations

import click
from click.parser import _OptionParser, _ParsingState


class _AttachedValueParser(_OptionParser):
    def _match_long_opt(self, opt: str, explicit_value: str | None, state: _ParsingState) -> None:
        option = self._long_opt.get(opt)
        if explicit_value is None or option is None or not option.takes_value or option.nargs != 1:
            super()._match_long_opt(opt, explicit_value, state)
            return
        option.process(explicit_value, state)


class AttachedValueCommand(click.Command):
    """A :class:`click.Command` parsed by :class:`_AttachedValueParser`."""

    def make_parser(self, ctx: click.Context) -> _OptionParser:
        parser = _AttachedValueParser(ctx)
        for param in self.get_params(ctx):
            param.add_to_parser(parser, ctx)
        return parser
