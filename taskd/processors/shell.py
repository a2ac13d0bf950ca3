"""`shell`: run a command (through /bin/sh) or an argv list (directly) as a child process group."""

from __future__ import annotations

from pydantic import Field, StrictStr, model_validator

from taskd.pipeline import Duration, ProcessorOptions, ProcessorType


class ShellOptions(ProcessorOptions):
    command: StrictStr | None = Field(None, description="command line run by /bin/sh -c")
    argv: tuple[StrictStr, ...] | None = Field(None, description="program and arguments, run without a shell")
    env: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="extra environment variables")
    cwd: StrictStr | None = Field(None, description="working directory (relative to the config file)")
    kill_grace: Duration = Field(5.0, description="seconds between SIGTERM and SIGKILL on stop or timeout")

    @model_validator(mode="after")
    def _one_of_command_or_argv(self) -> ShellOptions:
        if (self.command is None) == (self.argv is None):
            raise ValueError("give exactly one of 'command' (a shell string) or 'argv' (a list)")
        if self.command is not None and not self.command.strip():
            raise ValueError("'command' is empty")
        if self.argv is not None and not self.argv:
            raise ValueError("'argv' is empty")
        return self


TYPE = ProcessorType("shell", ShellOptions, "run a shell command or an argv list; fails on a non-zero exit")
