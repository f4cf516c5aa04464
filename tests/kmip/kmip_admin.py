"""Key administration on a KMIP server with PyKMIP's own client.

The integration tests use it as a site's key administrator would: keys
that kmsfs uses are created, activated, revoked and destroyed here, never
by kmsfs. Usage:

    kmip_admin.py CONF create GROUP NAME [--value HEX] [--usage encrypt,decrypt]
                                                         -> prints the UID
      (--value registers the given AES key, 16 or 32 bytes; --usage sets the
      cryptographic usage mask, encrypt and decrypt by default)
    kmip_admin.py CONF activate UID
    kmip_admin.py CONF deactivate UID
    kmip_admin.py CONF compromise UID
    kmip_admin.py CONF destroy UID
    kmip_admin.py CONF state UID

CONF is a JSON file: host, port, cert, key, ca, policy.
"""
import json
import sys
import time

from kmip import enums
from kmip.core import objects as cobjects
from kmip.core.factories import attributes as afactory
from kmip.pie import client as pclient
from kmip.pie import objects as pobjects


def connect(conf):
    c = pclient.ProxyKmipClient(
        hostname=conf["host"], port=conf["port"], cert=conf["cert"],
        key=conf["key"], ca=conf["ca"], ssl_version="PROTOCOL_TLSv1_2",
        kmip_version=enums.KMIPVersion.KMIP_1_2)
    c.open()
    return c


USAGE = {"encrypt": enums.CryptographicUsageMask.ENCRYPT,
         "decrypt": enums.CryptographicUsageMask.DECRYPT}


def template(conf, group, name, with_key_attrs, usage):
    f = afactory.AttributeFactory()
    attrs = []
    if with_key_attrs:
        attrs += [
            f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM,
                               enums.CryptographicAlgorithm.AES),
            f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, 256),
        ]
    attrs += [
        f.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK,
                           [USAGE[u] for u in usage]),
        f.create_attribute(enums.AttributeType.OPERATION_POLICY_NAME,
                           conf["policy"]),
        f.create_attribute(enums.AttributeType.NAME, name),
        f.create_attribute(enums.AttributeType.OBJECT_GROUP, group),
    ]
    return cobjects.TemplateAttribute(attributes=attrs)


def check(result):
    if result.result_status.value != enums.ResultStatus.SUCCESS:
        sys.exit("KMIP error: %s %s" % (result.result_reason.value,
                                         result.result_message.value))
    return result.uuid


def create(c, conf, group, name, value=None, usage=("encrypt", "decrypt")):
    if value is None:
        r = c.proxy.create(enums.ObjectType.SYMMETRIC_KEY,
                           template(conf, group, name, True, usage))
        return check(r)
    raw = bytes.fromhex(value)
    key = pobjects.SymmetricKey(enums.CryptographicAlgorithm.AES,
                                len(raw) * 8, raw)
    secret = c.object_factory.convert(key)
    r = c.proxy.register(enums.ObjectType.SYMMETRIC_KEY,
                         template(conf, group, name, False, usage), secret)
    return check(r)


def main():
    conf = json.load(open(sys.argv[1]))
    op, args = sys.argv[2], sys.argv[3:]
    c = connect(conf)
    try:
        if op == "create":
            opts = dict(zip(args[2::2], args[3::2]))
            usage = opts.get("--usage", "encrypt,decrypt").split(",")
            print(create(c, conf, args[0], args[1], opts.get("--value"),
                         [u for u in usage if u]))
        elif op == "activate":
            c.activate(args[0])
        elif op == "deactivate":
            c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION,
                     args[0])
        elif op == "compromise":
            c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, args[0],
                     compromise_occurrence_date=int(time.time()))
        elif op == "destroy":
            c.destroy(args[0])
        elif op == "state":
            attrs = c.get_attributes(args[0], ["State"])[1]
            print(attrs[0].attribute_value.value.name)
        else:
            sys.exit("unknown operation " + op)
    finally:
        c.close()


if __name__ == "__main__":
    main()
