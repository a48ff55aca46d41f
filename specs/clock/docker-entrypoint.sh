#!/bin/sh
# Entry point of the clock image: `serve` (the default) runs the HTTP service; anything else is
# run as a command, so `docker run clock date` still works.
set -eu

if [ "${1:-serve}" != serve ]; then
    exec "$@"
fi

echo "clock: listening on :${PORT:-8080}, TZ=${TZ:-Etc/UTC}, hits logged to ${CLOCK_DATA:-/tmp}/hits.log" >&2
# perl-base is Essential in Debian, so every Debian image has it.
exec perl -MIO::Socket::INET -MPOSIX=strftime -e '
    my $srv = IO::Socket::INET->new(LocalPort => $ENV{PORT} || 8080, Listen => 16, ReuseAddr => 1)
        or die "clock: cannot listen: $!\n";
    my $log = ($ENV{CLOCK_DATA} || "/tmp") . "/hits.log";
    while (my $c = $srv->accept) {
        my $now = strftime("%Y-%m-%dT%H:%M:%S%z", localtime);
        if (open(my $fh, ">>", $log)) { print $fh "$now\n"; close $fh }
        my $body = "$now\n";
        print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
        close $c;
    }'
