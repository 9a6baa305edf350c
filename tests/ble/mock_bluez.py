#!/usr/bin/python3
"""Mocked BlueZ for fitedge's BLE integration tests.

The test machines have no Bluetooth at all, so the gateway's unmodified
btleplug (bluez-async over D-Bus) talks to this script instead of bluetoothd.
It runs python-dbusmock's `bluez5` template in-process on a private system bus
(started with tests/ble/system-bus.conf; DBUS_SYSTEM_BUS_ADDRESS must point at
it), adds adapter hci0 and three peripherals with their GATT trees, then lets
the test drive it over stdin/stdout:

    stdout: `ready` once everything is on the bus, one acknowledgement per
            command (`ok <command>` or `error <reason>`), and event lines for
            what the client does:
              event discovery start | event discovery stop
              event connect <ADDR> | event disconnect <ADDR>
              event subscribe <ADDR> <UUID16> | event unsubscribe <ADDR> <UUID16>
              event write <ADDR> <UUID16> <HEX>
    stdin:  notify <ADDR> <UUID16> <HEX>  set the characteristic's Value and
                                          emit PropertiesChanged (notify or
                                          indicate)
            disconnect <ADDR>             the peripheral drops the link
            remove <ADDR> | add <ADDR>    the device object (and its GATT
                                          tree) disappears / comes back
            power on | power off          the adapter's Powered property (off
                                          drops every link, as BlueZ does)
            quit                          exit 0 (so do EOF and SIGTERM)

UUID16 is the 16-bit form in hex (2A37); on the bus every UUID is 128-bit.

Two dbusmock quirks are handled here: the template's Device1.Connect does not
store Connected=true (we install our own Connect/Disconnect), and dbusmock
introspection appends an interface that has properties but no methods after
the child <node>s, which bluez-async's XML parser rejects (GattService1 gets a
no-op method so its <interface> stays in one contiguous block).

Set MOCK_BLUEZ_LOG=<file> to keep dbusmock's log of every D-Bus call.
"""

import os
import signal
import sys
from dataclasses import dataclass

import dbus
import dbus.mainloop.glib
import dbus.service
from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from gi.repository import GLib

BUS_NAME = 'org.bluez'
ADAPTER_NAME = 'hci0'
ADAPTER_PATH = f'/org/bluez/{ADAPTER_NAME}'
ADAPTER_IFACE = 'org.bluez.Adapter1'
DEVICE_IFACE = 'org.bluez.Device1'
SERVICE_IFACE = 'org.bluez.GattService1'
CHAR_IFACE = 'org.bluez.GattCharacteristic1'
FIRST_GATT_HANDLE = 0x0010


@dataclass(frozen=True)
class Characteristic:
    uuid16: int
    flags: tuple


@dataclass(frozen=True)
class Service:
    uuid16: int
    characteristics: tuple


@dataclass(frozen=True)
class Peripheral:
    address: str
    name: str
    rssi: int
    services: tuple
    service_data: tuple = ()  # ((uuid16, bytes), ...) as advertised


PERIPHERALS = (
    Peripheral('C0:11:22:33:44:01', 'HRM-Pro', -50, (
        Service(0x180D, (Characteristic(0x2A37, ('notify',)),)),
    )),
    Peripheral('C0:11:22:33:44:02', 'BLE Scale', -60, (
        Service(0x181D, (Characteristic(0x2A9D, ('indicate',)),)),
    )),
    # FTMS service data: machine available, type treadmill (bit 0).
    Peripheral('C0:11:22:33:44:03', 'FTMS Treadmill', -70, (
        Service(0x1826, (Characteristic(0x2ACD, ('notify',)),
                         Characteristic(0x2ADA, ('notify',)))),
    ), ((0x1826, b'\x01\x01\x00'),)),
)


class CommandError(Exception):
    """A stdin command that cannot be carried out; reported as `error ...`."""


def say(line):
    print(line, flush=True)


def uuid128(uuid16):
    return f'0000{uuid16:04x}-0000-1000-8000-00805f9b34fb'


def byte_array(data):
    return dbus.Array(list(data), signature='y', variant_level=1)


def device_path(address):
    return f'{ADAPTER_PATH}/dev_{address.replace(":", "_")}'


def gatt_layout(peripheral):
    """Yield (service, path, [(characteristic, path), ...]) with BlueZ-style
    object names (serviceXXXX/charYYYY, named after attribute handles)."""
    handle = FIRST_GATT_HANDLE
    for service in peripheral.services:
        service_path = f'{device_path(peripheral.address)}/service{handle:04x}'
        handle += 1
        chars = []
        for characteristic in service.characteristics:
            chars.append((characteristic, f'{service_path}/char{handle:04x}'))
            handle += 2
        yield service, service_path, chars


def set_props(obj, interface, changes, always=False):
    """Store properties and emit PropertiesChanged for those that changed
    (or for all of them with always=True)."""
    current = obj.props[interface]
    changed = {name: value for name, value in changes.items()
               if always or current.get(name) != value}
    if not changed:
        return
    current.update(changed)
    obj.EmitSignal(dbus.PROPERTIES_IFACE, 'PropertiesChanged', 'sa{sv}as',
                   [interface, changed, dbus.Array([], signature='s')])


def child_objects(path, interface):
    prefix = path + '/'
    return [obj for obj_path, obj in sorted(mockobject.objects.items())
            if obj_path.startswith(prefix) and interface in obj.props]


# --- org.bluez.Adapter1 ----------------------------------------------------

def start_discovery(adapter):
    set_props(adapter, ADAPTER_IFACE, {'Discovering': dbus.Boolean(True, variant_level=1)})
    say('event discovery start')
    advertise(adapter)


def stop_discovery(adapter):
    set_props(adapter, ADAPTER_IFACE, {'Discovering': dbus.Boolean(False, variant_level=1)})
    say('event discovery stop')


def set_discovery_filter(_adapter, _discovery_filter):
    """Accepted and ignored: every mocked peripheral is always in range."""


def advertise(adapter):
    """Like bluetoothd during a scan: refresh RSSI of every known device."""
    for device in child_objects(adapter.path, DEVICE_IFACE):
        set_props(device, DEVICE_IFACE,
                  {'RSSI': dbus.Int16(device.peripheral.rssi, variant_level=1)},
                  always=True)


# --- org.bluez.Device1 -----------------------------------------------------

def device_connect(device):
    set_props(device, DEVICE_IFACE, {'Connected': dbus.Boolean(True, variant_level=1)})
    set_props(device, DEVICE_IFACE, {'ServicesResolved': dbus.Boolean(True, variant_level=1)})
    say(f'event connect {device.peripheral.address}')


def device_disconnect(device):
    drop_link(device)
    say(f'event disconnect {device.peripheral.address}')


def drop_link(device):
    for characteristic in child_objects(device.path, CHAR_IFACE):
        set_props(characteristic, CHAR_IFACE, {'Notifying': dbus.Boolean(False, variant_level=1)})
    set_props(device, DEVICE_IFACE, {'ServicesResolved': dbus.Boolean(False, variant_level=1)})
    set_props(device, DEVICE_IFACE, {'Connected': dbus.Boolean(False, variant_level=1)})


# --- org.bluez.GattCharacteristic1 -----------------------------------------

def require_connected(characteristic):
    device = mockobject.objects[device_path(characteristic.peripheral.address)]
    if not device.props[DEVICE_IFACE]['Connected']:
        raise dbus.exceptions.DBusException('Not connected', name='org.bluez.Error.Failed')


def describe(characteristic):
    return f'{characteristic.peripheral.address} {characteristic.characteristic.uuid16:04X}'


def start_notify(characteristic):
    require_connected(characteristic)
    if not {'notify', 'indicate'} & set(characteristic.characteristic.flags):
        raise dbus.exceptions.DBusException('Operation is not supported',
                                            name='org.bluez.Error.NotSupported')
    set_props(characteristic, CHAR_IFACE, {'Notifying': dbus.Boolean(True, variant_level=1)})
    say(f'event subscribe {describe(characteristic)}')


def stop_notify(characteristic):
    if not characteristic.props[CHAR_IFACE]['Notifying']:
        # btleplug recognises exactly this error as "already unsubscribed".
        raise dbus.exceptions.DBusException('No notify session started',
                                            name='org.bluez.Error.Failed')
    set_props(characteristic, CHAR_IFACE, {'Notifying': dbus.Boolean(False, variant_level=1)})
    say(f'event unsubscribe {describe(characteristic)}')


def read_value(characteristic, _options):
    require_connected(characteristic)
    return dbus.Array(characteristic.props[CHAR_IFACE]['Value'], signature='y')


def write_value(characteristic, value, _options):
    require_connected(characteristic)
    characteristic.props[CHAR_IFACE]['Value'] = byte_array(value)
    say(f'event write {describe(characteristic)} {bytes(value).hex().upper()}')


# --- building the object tree ----------------------------------------------

def start_bluez(bus):
    """Own org.bluez and load the bluez5 template with a powered hci0."""
    bus_name = dbus.service.BusName(BUS_NAME, bus, do_not_queue=True)
    root = mockobject.DBusMockObject(bus_name, '/', OBJECT_MANAGER_IFACE, {},
                                     logfile=os.environ.get('MOCK_BLUEZ_LOG', os.devnull),
                                     is_object_manager=True)
    mockobject.objects['/'] = root
    root.AddTemplate('bluez5', {})
    root.AddAdapter(ADAPTER_NAME, 'fitedge-test')
    mockobject.objects[ADAPTER_PATH].AddMethods(ADAPTER_IFACE, [
        ('StartDiscovery', '', '', start_discovery),
        ('StopDiscovery', '', '', stop_discovery),
        ('SetDiscoveryFilter', 'a{sv}', '', set_discovery_filter),
    ])
    return root


def device_properties(peripheral):
    return {
        'Address': dbus.String(peripheral.address, variant_level=1),
        'AddressType': dbus.String('public', variant_level=1),
        'Name': dbus.String(peripheral.name, variant_level=1),
        'Alias': dbus.String(peripheral.name, variant_level=1),
        'Adapter': dbus.ObjectPath(ADAPTER_PATH, variant_level=1),
        'RSSI': dbus.Int16(peripheral.rssi, variant_level=1),
        'UUIDs': dbus.Array([uuid128(s.uuid16) for s in peripheral.services],
                            signature='s', variant_level=1),
        'ManufacturerData': dbus.Dictionary({}, signature='qv', variant_level=1),
        'ServiceData': dbus.Dictionary(
            {uuid128(u): byte_array(data) for u, data in peripheral.service_data},
            signature='sv', variant_level=1),
        'Paired': dbus.Boolean(False, variant_level=1),
        'Bonded': dbus.Boolean(False, variant_level=1),
        'Trusted': dbus.Boolean(False, variant_level=1),
        'Blocked': dbus.Boolean(False, variant_level=1),
        'LegacyPairing': dbus.Boolean(False, variant_level=1),
        'Connected': dbus.Boolean(False, variant_level=1),
        'ServicesResolved': dbus.Boolean(False, variant_level=1),
    }


def service_properties(service, owner_path):
    return {
        'UUID': dbus.String(uuid128(service.uuid16), variant_level=1),
        'Primary': dbus.Boolean(True, variant_level=1),
        'Device': dbus.ObjectPath(owner_path, variant_level=1),
        'Includes': dbus.Array([], signature='o', variant_level=1),
    }


def characteristic_properties(characteristic, service_path):
    return {
        'UUID': dbus.String(uuid128(characteristic.uuid16), variant_level=1),
        'Service': dbus.ObjectPath(service_path, variant_level=1),
        'Value': byte_array(b''),
        'Notifying': dbus.Boolean(False, variant_level=1),
        'Flags': dbus.Array(characteristic.flags, signature='s', variant_level=1),
        'MTU': dbus.UInt16(23, variant_level=1),
    }


def add_object(root, path, interface, props, methods):
    """Export one object and announce it with InterfacesAdded."""
    root.AddObject(path, interface, props, methods)
    root.object_manager_emit_added(path)
    return mockobject.objects[path]


def add_peripheral(root, peripheral):
    path = device_path(peripheral.address)
    device = add_object(root, path, DEVICE_IFACE, device_properties(peripheral), [
        ('Connect', '', '', device_connect),
        ('Disconnect', '', '', device_disconnect),
    ])
    device.peripheral = peripheral
    for service, service_path, chars in gatt_layout(peripheral):
        # BlueZ's GattService1 has no methods; this one keeps the interface
        # in a single <interface> block in dbusmock's introspection XML.
        add_object(root, service_path, SERVICE_IFACE, service_properties(service, path),
                   [('MockNoop', '', '', '')])
        for characteristic, char_path in chars:
            char = add_object(root, char_path, CHAR_IFACE,
                              characteristic_properties(characteristic, service_path), [
                                  ('StartNotify', '', '', start_notify),
                                  ('StopNotify', '', '', stop_notify),
                                  ('ReadValue', 'a{sv}', 'ay', read_value),
                                  ('WriteValue', 'aya{sv}', '', write_value),
                              ])
            char.peripheral = peripheral
            char.characteristic = characteristic


def remove_peripheral(root, device):
    """Drop the link, then remove the GATT tree (deepest first) and the device."""
    drop_link(device)
    doomed = child_objects(device.path, CHAR_IFACE) + child_objects(device.path, SERVICE_IFACE)
    for obj in doomed + [device]:
        interfaces = dbus.Array(list(obj.props), signature='s')
        root.RemoveObject(obj.path)
        root.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesRemoved', 'oas',
                        [dbus.ObjectPath(obj.path), interfaces])


# --- stdin commands --------------------------------------------------------

def find_peripheral(address):
    for peripheral in PERIPHERALS:
        if peripheral.address == address.upper():
            return peripheral
    raise CommandError(f'unknown address {address}')


def find_device(address):
    path = device_path(find_peripheral(address).address)
    if path not in mockobject.objects:
        raise CommandError(f'{address} is removed')
    return mockobject.objects[path]


def find_characteristic(address, uuid16):
    device = find_device(address)
    for char in child_objects(device.path, CHAR_IFACE):
        if f'{char.characteristic.uuid16:04X}' == uuid16.upper():
            return char
    raise CommandError(f'{address} has no characteristic {uuid16}')


def cmd_notify(_root, address, uuid16, hex_value):
    try:
        value = bytes.fromhex(hex_value)
    except ValueError as e:
        raise CommandError(f'bad hex {hex_value}') from e
    char = find_characteristic(address, uuid16)
    set_props(char, CHAR_IFACE, {'Value': byte_array(value)}, always=True)


def cmd_disconnect(_root, address):
    drop_link(find_device(address))


def cmd_remove(root, address):
    remove_peripheral(root, find_device(address))


def cmd_add(root, address):
    peripheral = find_peripheral(address)
    if device_path(peripheral.address) in mockobject.objects:
        raise CommandError(f'{address} is already present')
    add_peripheral(root, peripheral)


def cmd_power(_root, state):
    if state not in ('on', 'off'):
        raise CommandError('power takes on or off')
    adapter = mockobject.objects[ADAPTER_PATH]
    if state == 'off':
        for device in child_objects(ADAPTER_PATH, DEVICE_IFACE):
            if device.props[DEVICE_IFACE].get('Connected'):
                drop_link(device)
        set_props(adapter, ADAPTER_IFACE, {'Discovering': dbus.Boolean(False, variant_level=1)})
    set_props(adapter, ADAPTER_IFACE, {'Powered': dbus.Boolean(state == 'on', variant_level=1)})


# name -> (handler, number of arguments)
COMMANDS = {
    'power': (cmd_power, 1),
    'notify': (cmd_notify, 3),
    'disconnect': (cmd_disconnect, 1),
    'remove': (cmd_remove, 1),
    'add': (cmd_add, 1),
}


def run_command(root, loop, line):
    words = line.split()
    if not words:
        return
    name, args = words[0], words[1:]
    if name == 'quit':
        say('ok quit')
        loop.quit()
        return
    try:
        if name not in COMMANDS:
            raise CommandError(f'unknown command {name}')
        handler, arity = COMMANDS[name]
        if len(args) != arity:
            raise CommandError(f'{name} takes {arity} argument(s)')
        handler(root, *args)
    except CommandError as e:
        say(f'error {e}')
    else:
        say(f'ok {name}')


def watch_stdin(root, loop):
    """Run stdin commands line by line from the GLib main loop; quit on EOF."""
    pending = bytearray()

    def on_input(fd, _condition):
        data = os.read(fd, 65536)
        if not data:
            loop.quit()
            return GLib.SOURCE_REMOVE
        pending.extend(data)
        while (end := pending.find(b'\n')) >= 0:
            line = pending[:end].decode(errors='replace')
            del pending[:end + 1]
            run_command(root, loop, line)
        return GLib.SOURCE_CONTINUE

    GLib.io_add_watch(sys.stdin.fileno(), GLib.PRIORITY_DEFAULT,
                      GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, on_input)


def main():
    if 'DBUS_SYSTEM_BUS_ADDRESS' not in os.environ:
        sys.exit('mock_bluez: set DBUS_SYSTEM_BUS_ADDRESS to a private bus '
                 '(see tests/ble/system-bus.conf)')
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    root = start_bluez(dbus.SystemBus())
    for peripheral in PERIPHERALS:
        add_peripheral(root, peripheral)

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, loop.quit)
    watch_stdin(root, loop)
    say('ready')
    loop.run()


if __name__ == '__main__':
    main()
