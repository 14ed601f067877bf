"""`turnpike dev`: run the whole fleet on this machine; `turnpike dev call`: try it."""

from __future__ import annotations

import argparse
from pathlib import Path

from turnpike.core.config import apply_env_defaults, ip_address

NAME = "dev"
HELP = "run a relay, the token API, the stream gateway and a sample consumer on this machine"


def _add_state_file(parser: argparse.ArgumentParser, help_text: str) -> None:
    from turnpike.dev.fleet import default_state_file

    parser.add_argument(
        "--state-file",
        type=Path,
        default=default_state_file(),
        help=f"{help_text} (default: %(default)s)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        type=ip_address,
        default="127.0.0.1",
        help="address every service listens on; peers and destinations are allowed only on its "
        "network (default 127.0.0.1; a LAN address lets other devices use the fleet)",
    )
    _add_state_file(parser, "where the running fleet's URLs and dev account are written as JSON")
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="use free ephemeral ports instead of the fixed defaults (3478, 8080, 8081, 8443, "
        "SIP 5060)",
    )
    sub = parser.add_subparsers(dest="dev_command", metavar="SUBCOMMAND")
    call = sub.add_parser(
        "call", help="place a call into the running fleet's gateway and check the audio"
    )
    _add_state_file(call, "the state file of the running `turnpike dev`")
    call.add_argument(
        "--wav",
        type=Path,
        help="WAV file to play: µ-law, A-law or 16-bit PCM at any rate (default: a speech clip)",
    )
    call.add_argument("--twiml", type=Path, help="TwiML document to run instead of the default")
    # Not --sip: TURNPIKE_<FLAG> variables are shared by every command, and TURNPIKE_SIP is
    # `turnpike streamgw --sip HOST:PORT` (set in every gateway container).
    call.add_argument(
        "--via-sip",
        action="store_true",
        help="place the call over SIP to the dev number instead of through the REST API",
    )
    apply_env_defaults(call)


def run(args: argparse.Namespace) -> int:
    if args.dev_command == "call":
        from turnpike.dev.call import run_call

        return run_call(args.state_file, args.wav, args.twiml, args.via_sip)

    from turnpike.core import service
    from turnpike.dev.fleet import run_fleet

    return service.run(lambda stop: run_fleet(args.host, args.state_file, args.free_ports, stop))
