"""A real SMTP server for the tests of Hecate's `email` notifier: aiosmtpd (Debian's
python3-aiosmtpd), on a loopback port. Each mail it takes is appended to --mails as one JSON line
(the EHLO name, the login, the envelope and the data); --ready is written once it listens.

AUTH (PLAIN, LOGIN) is offered without TLS (`auth_require_tls=False`: the tests speak plain SMTP)
and accepts only --password, or any password without it. No STARTTLS is offered."""

import argparse
import json
import signal
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--password")
parser.add_argument("--mails", required=True)
parser.add_argument("--ready", required=True)
args = parser.parse_args()


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data if isinstance(session.auth_data, list) else None
        mail = {
            "ehlo": session.host_name,
            "login": login,
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        with open(args.mails, "a", encoding="utf-8") as f:
            f.write(json.dumps(mail) + "\n")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword):
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if args.password is None or password == args.password:
            return AuthResult(success=True, auth_data=[user, password])
    return AuthResult(success=False, handled=False)


controller = Controller(
    Recorder(),
    hostname="127.0.0.1",
    port=args.port,
    authenticator=authenticator,
    auth_require_tls=False,
)
controller.start()
with open(args.ready, "w", encoding="utf-8") as f:
    f.write("listening\n")

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
controller.stop()
