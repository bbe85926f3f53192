#!/usr/bin/python3
"""What a desktop applet sees of gns3-qemud: a GDBusObjectManagerClient (GLib's, as GNOME
applets and most GTK programs use) on org.gns3.Qemu at /org/gns3/Qemu, on the bus whose
address is argv[1]. Prints one line per event, flushed, until stdin closes:
    ready                              the client is up (its initial objects are listed first)
    object <path> <interface,...>      an object it had at start-up
    object-added <path> <interface,...>
    object-removed <path>
    changed <path> <Property>=<value>,...   one line per PropertiesChanged, sorted
"""
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402


def out(*words):
    print(" ".join(words), flush=True)


def interfaces(obj):
    return ",".join(sorted(i.get_interface_name() for i in obj.get_interfaces()))


def main():
    bus = Gio.DBusConnection.new_for_address_sync(
        sys.argv[1],
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None,
        None,
    )
    manager = Gio.DBusObjectManagerClient.new_sync(
        bus,
        Gio.DBusObjectManagerClientFlags.NONE,
        "org.gns3.Qemu",
        "/org/gns3/Qemu",
        None,  # the default proxy types: Gio.DBusObjectProxy, Gio.DBusProxy
        None,
        None,
    )
    for obj in sorted(manager.get_objects(), key=lambda o: o.get_object_path()):
        out("object", obj.get_object_path(), interfaces(obj))
    manager.connect(
        "object-added", lambda _m, o: out("object-added", o.get_object_path(), interfaces(o))
    )
    manager.connect("object-removed", lambda _m, o: out("object-removed", o.get_object_path()))

    def changed(_m, obj, _proxy, props, _invalidated):
        d = props.unpack()
        out("changed", obj.get_object_path(), ",".join(f"{k}={d[k]}" for k in sorted(d)))

    manager.connect("interface-proxy-properties-changed", changed)
    loop = GLib.MainLoop()
    GLib.io_add_watch(sys.stdin, GLib.IO_HUP | GLib.IO_IN, lambda *_: loop.quit())
    out("ready")
    loop.run()


main()
