r"""What the package's command lines share: :class:`OneLineParser`, whose
usage errors are one line on stderr with exit status 2."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    r"""An :class:`argparse.ArgumentParser` whose errors are one line,
    ``PROG: error: MESSAGE (see PROG --help)``, instead of the usage (which
    ``--help`` shows) and the message. Its subparsers are of this class
    too."""

    def error(self, message: str):
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} '
                     f'--help)\n')

    def fail(self, message) -> None:
        r"""A usage error found after parsing (a value no run can take, a
        folder that cannot be written, ...): ``PROG: error: MESSAGE`` on
        stderr and :class:`SystemExit` with status 2, as :meth:`error`."""
        self.exit(2, f'{self.prog}: error: {message}\n')


__all__ = ['OneLineParser']
