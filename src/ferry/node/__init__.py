"""The storage node: an asyncio TCP server exporting a backend (`server`), one handler per
opcode (`handlers`), and the asyncio client the agent uses to reach it (`client`)."""
