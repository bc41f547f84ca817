#!/usr/bin/env python3
"""Writes numbered lines to a log file at a steady rate, rotating it as logrotate's rename and
create does, for the exactly-once tests of log follows (README "Logs").

    log-writer.py PATH LINES_PER_SECOND SECONDS ROTATE_EVERY_SECONDS

Line n is "n <padding>\\n". Rotation renames PATH.N to PATH.N+1 (oldest first), PATH to PATH.1,
and creates a new PATH; nothing is deleted. Prints the number of lines written when done.
"""
import os
import sys
import time


def rotate(path):
    generation = 1
    while os.path.exists("%s.%d" % (path, generation)):
        generation += 1
    for older in range(generation - 1, 0, -1):
        os.rename("%s.%d" % (path, older), "%s.%d" % (path, older + 1))
    os.rename(path, path + ".1")


def main():
    path, rate, seconds, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    batch = max(1, rate // 100)
    padding = "x" * 40
    written = 0
    start = time.monotonic()
    next_rotation = start + every
    log = open(path, "a")
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if now >= next_rotation:
            log.close()
            rotate(path)
            log = open(path, "a")
            next_rotation += every
        due = int((now - start) * rate)
        if written < due:
            count = min(batch, due - written)
            log.write("".join("%d %s\n" % (written + i, padding) for i in range(count)))
            log.flush()
            written += count
        else:
            time.sleep(0.002)
    log.close()
    print(written)


if __name__ == "__main__":
    main()
