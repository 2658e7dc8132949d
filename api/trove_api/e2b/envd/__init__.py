"""envd's Connect RPC services (``filesystem.Filesystem``, ``process.Process``): messages and ASGI apps.

The four modules beside this one are the code generated from envd's published
``filesystem.proto`` and ``process.proto`` (protoc-gen-py 0.6.0 and the ``connectrpc``
plugin), copied unchanged from the ``e2b`` Python SDK 2.63.0, which ships them under the
MIT License: Copyright (c) 2025 FOUNDRYLABS, INC. Permission is hereby granted, free of
charge, to any person obtaining a copy of this software and associated documentation files
(the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
the Software, subject to the condition that the above copyright notice and this permission
notice shall be included in all copies or substantial portions of the Software. THE SOFTWARE
IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND. Using the very modules the client uses
keeps the two ends of the wire identical; regenerate them when the pinned SDK moves.
"""
