"""The agent protocol's API half, shared by both runtimes: frames, the session, checked restores.

``AGENT_SOURCE`` is trove-agent itself (``runtimes/agent/trove_agent.py``, standard library
only): the sandbox image copies it, and the local runtime runs it from here.
"""

from pathlib import Path

AGENT_SOURCE = Path(__file__).resolve().parents[1] / "agent" / "trove_agent.py"
