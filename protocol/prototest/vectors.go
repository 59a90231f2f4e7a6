// Package prototest holds the byte-level test vectors of the Frank protocol:
// signed indicia, good and bad messages, and the key that signed them. The
// hub, appliance and testbench tests all read the same table, so the parts
// cannot drift apart. The key is public and must never sign real postage.
package prototest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"

	"github.com/frank-postage/frank/protocol"
)

// Key returns the fixed P-256 key that signed the vectors. Its scalar is
// SHA-256 of a public sentence, so anyone can re-derive it.
func Key() *ecdsa.PrivateKey {
	d := sha256.Sum256([]byte("frank protocol test vector key, never for production"))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		panic("prototest: " + err.Error())
	}
	return k
}

// Resign signs the first vector's fields again as certificate serial with
// k, for a test's own keys, and returns them with their 113 bytes.
func Resign(serial uint32, k *ecdsa.PrivateKey) (protocol.Indicium, []byte, error) {
	in := Indicia[0].Fields
	in.CertSerial = serial
	if err := in.Sign(k); err != nil {
		return in, nil, err
	}
	b, err := in.MarshalBinary()
	return in, b, err
}

// IndiciumVector is a signed indicium and its fields.
type IndiciumVector struct {
	Name   string
	Fields protocol.Indicium // without Signature
	Hex    string            // the 113 bytes
}

// Bytes decodes Hex.
func (v IndiciumVector) Bytes() []byte {
	b, err := hex.DecodeString(v.Hex)
	if err != nil {
		panic("prototest: " + v.Name + ": " + err.Error())
	}
	return b
}

// Indicia are valid v1 indicia signed by Key. Their signatures carry a
// high s on purpose, as stamps signed before signers made s low do:
// verifiers accept either half. LowS is the first one's low-s twin.
var Indicia = []IndiciumVector{
	{
		Name: "first-class letter",
		Fields: protocol.Indicium{CertSerial: 1, Vendor: "FR", Model: "2N", MPSDSerial: 50000061,
			AR: 780, Postage: 780, Date: 20261129, OriginZIP: 94544, UserID: 1, SoftwareID: 1,
			Label: protocol.LabelSerial{Sheet: 0x1966F8CF, Position: 1}, DR: 999_220, RateCategory: "1100"},
		Hex: "0103000000014652324e02faf0bd000000030c00030c01352909000171500000000001011966f8cf01000f3f34313130" +
			"309ee85822dc1fdb700f44d01517b9bcd1efe77e161362c85c6f744988f9074487e12859f52ffd8b3287262792cf6c" +
			"2302ddad7e057180cb76bbe0d8cd56c7820d",
	},
	{
		Name: "every field at its limit",
		Fields: protocol.Indicium{CertSerial: 7, Vendor: "FR", Model: "2N", MPSDSerial: 99999999,
			AR: protocol.MaxAR, Postage: protocol.MaxPostage, Date: 20991231, OriginZIP: 2134,
			UserID: protocol.MaxUserID, SoftwareID: 255,
			Label: protocol.LabelSerial{Sheet: 0xFFFFFFFF, Position: 10}, DR: 0, RateCategory: "2100"},
		Hex: "0103000000074652324e05f5e0ffffffffffffffffff01404cff00000856ffffffffffffffffffff0a00000000323130" +
			"30714378798a9cb577aac8bc16d9a331ef433ebf79d085d9615d983b4a69a0def7b862ee8735dcb46bddd99873f92f" +
			"a47df2cde9434e3ed0d8c21750bf7e954b29",
	},
}

// LowS is Indicia[0] with its signature's s replaced by n − s, the low half
// signers use today: the same stamp, as protocol/README.md gives it beside
// the high-s vector. Both verify with Key.
var LowS = IndiciumVector{
	Name:   "first-class letter, low s",
	Fields: Indicia[0].Fields,
	Hex: "0103000000014652324e02faf0bd000000030c00030c01352909000171500000000001011966f8cf01000f3f34313130" +
		"309ee85822dc1fdb700f44d01517b9bcd1efe77e161362c85c6f744988f90744871ed7a609d00274ce78d9d86d3093dc" +
		"fcdf397ca83596d30e37d8f1f5a59ba344",
}

// BadIndicium is a byte string that must not decode, and why.
type BadIndicium struct {
	Name string
	Hex  string
	Err  error
}

// BadIndicia are derived from Indicia[0] by breaking one rule each.
var BadIndicia = []BadIndicium{
	{"empty", "", protocol.ErrIndiciumLength},
	{"one byte short", Indicia[0].Hex[:224], protocol.ErrIndiciumLength},
	{"version 2", "02" + Indicia[0].Hex[2:], protocol.ErrIndiciumVersion},
	{"algorithm 1 (DSA)", "0101" + Indicia[0].Hex[4:], protocol.ErrIndiciumAlgorithm},
	{"vendor not ASCII", Indicia[0].Hex[:12] + "ff52" + Indicia[0].Hex[16:], protocol.ErrIndiciumField},
	{"label position 0", Indicia[0].Hex[:80] + "00" + Indicia[0].Hex[82:], protocol.ErrIndiciumField},
	{"signature of another body", Indicia[1].Hex[:98] + Indicia[0].Hex[98:], protocol.ErrIndiciumSignature},
}

// MessageVector is a JSON message and the code decoding must give ("" for a
// valid message).
type MessageVector struct {
	Name string
	JSON string
	Code protocol.Code
}

// GoodPurchase is a valid one-stamp purchase, priced on Rates.
const GoodPurchase = `{"request_id":"r-0001","kiosk_id":"kiosk-1","origin_zip":"94544",` +
	`"rate_table":"usps-2025-07-13","items":[{"rate_class":"1100","weight_mg":20000,` +
	`"amount_mills":780,"label_serial":"1966-F8CF-01"}],` +
	`"payment":{"method":"card_token","token":"tok_approve","brand":"visa","last4":"4242"}}`

// PurchaseRequests are decoded by DecodePurchaseRequest.
var PurchaseRequests = []MessageVector{
	{"good", GoodPurchase, ""},
	{"prepaid account", `{"request_id":"r-2","kiosk_id":"k2","origin_zip":"02134","rate_table":"usps-2025-07-13","items":[{"rate_class":"1200","weight_mg":3000,"amount_mills":610,"label_serial":"0000-0001-10"}],"payment":{"method":"account","pay_code":"PAY-ABCD-EFGH-2345-67QR"}}`, ""},
	{"prepaid account by login only", `{"request_id":"r-2","kiosk_id":"k2","origin_zip":"02134","rate_table":"usps-2025-07-13","items":[{"rate_class":"1200","weight_mg":3000,"amount_mills":610,"label_serial":"0000-0001-10"}],"payment":{"method":"account","account_id":"acct-9"}}`, protocol.CodePaymentInvalid},
	{"pay code malformed", `{"request_id":"r-2","kiosk_id":"k2","origin_zip":"02134","rate_table":"usps-2025-07-13","items":[{"rate_class":"1200","weight_mg":3000,"amount_mills":610,"label_serial":"0000-0001-10"}],"payment":{"method":"account","pay_code":"PAY-1234"}}`, protocol.CodePaymentInvalid},
	{"reprint", `{"request_id":"r-3","kiosk_id":"k2","origin_zip":"02134","rate_table":"usps-2025-07-13","items":[{"rate_class":"1100","weight_mg":3000,"amount_mills":780,"label_serial":"0000-0001-02"}],"payment":{"method":"none"},"reprint_of":{"request_id":"r-2","label_serial":"0000-0001-01"}}`, ""},
	{"no rate table", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"free without reprint", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"none"}}`, protocol.CodePaymentInvalid},
	{"reprint that pays", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-02"}],"payment":{"method":"card_token","token":"t"},"reprint_of":{"request_id":"r0","label_serial":"1966-F8CF-01"}}`, protocol.CodePaymentInvalid},
	{"not json", `purchase please`, protocol.CodeMalformed},
	{"truncated", GoodPurchase[:40], protocol.CodeMalformed},
	{"unknown field", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","items":[],"payment":{},"card_number":"4111111111111111"}`, protocol.CodeMalformed},
	{"trailing data", GoodPurchase + `{}`, protocol.CodeInvalidRequest},
	{"trailing garbage", GoodPurchase + ` x`, protocol.CodeInvalidRequest},
	{"kiosk_id twice", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"t"},"kiosk_id":"victim"}`, protocol.CodeInvalidRequest},
	{"kiosk_id twice in two cases", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"t"},"KIOSK_ID":"victim"}`, protocol.CodeInvalidRequest},
	{"token twice", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"t","token":"u"}}`, protocol.CodeInvalidRequest},
	{"label twice in an item", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01","label_serial":"1966-F8CF-02"}],"payment":{"method":"card_token","token":"t"}}`, protocol.CodeInvalidRequest},
	{"zip 00000", `{"request_id":"r","kiosk_id":"k","origin_zip":"00000","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"t"}}`, protocol.CodeInvalidRequest},
	{"amount as string", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":"780","label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeMalformed},
	{"no request id", `{"kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"kiosk id with slash", `{"request_id":"r","kiosk_id":"k/1","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"no items", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"four digit zip", `{"request_id":"r","kiosk_id":"k","origin_zip":"2134","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"zero weight", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":0,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"negative amount", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":-780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"label position 11", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-11"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"same label twice", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"},{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-f8cf-01"}],"payment":{"method":"account","account_id":"a"}}`, protocol.CodeInvalidRequest},
	{"no payment method", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{}}`, protocol.CodePaymentInvalid},
	{"card token missing", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token"}}`, protocol.CodePaymentInvalid},
	{"card number as the token", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"4111 1111-1111 1111"}}`, protocol.CodePaymentInvalid},
	{"track data as the token", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":";4111111111111111=25121010000000000?"}}`, protocol.CodePaymentInvalid},
	{"card number inside the token", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"tok_4111111111111111"}}`, protocol.CodePaymentInvalid},
	{"card number as the brand", `{"request_id":"r","kiosk_id":"k","origin_zip":"94544","rate_table":"v","items":[{"rate_class":"1100","weight_mg":1,"amount_mills":780,"label_serial":"1966-F8CF-01"}],"payment":{"method":"card_token","token":"tok_approve","brand":"4111111111111111"}}`, protocol.CodePaymentInvalid},
}

// PurchaseResults are decoded by DecodePurchaseResult.
var PurchaseResults = []MessageVector{
	{"ok", `{"request_id":"r-0001","status":"ok","indicia":[{"meter_number":"FR2N50000061","rate_class":"1100","amount_mills":780,"label_serial":"1966-F8CF-01","matrix":"AQMAAAABRlIyTgL68L0AAAADDAADDAE1KQkAAXFQAAAAAAEBGWb4zwEADz80MTEwMJ7oWCLcH9twD0TQFRe5vNHv534WE2LIXG90SYj5B0SH4ShZ9S/9izKHJieSz2wjAt2tfgVxgMt2u+DYzVbHgg0="}]}`, ""},
	{"rejected", `{"request_id":"r-0001","status":"rejected","error":{"code":"label_used","message":"label 1966-F8CF-01 already carries an indicium"}}`, ""},
	{"ok without indicia", `{"request_id":"r-0001","status":"ok"}`, protocol.CodeInvalidRequest},
	{"short matrix", `{"request_id":"r-0001","status":"ok","indicia":[{"meter_number":"FR2N50000061","rate_class":"1100","amount_mills":780,"label_serial":"1966-F8CF-01","matrix":"AQM="}]}`, protocol.CodeInvalidRequest},
	{"rejected without error", `{"request_id":"r-0001","status":"rejected"}`, protocol.CodeInvalidRequest},
	{"unknown status", `{"request_id":"r-0001","status":"maybe"}`, protocol.CodeInvalidRequest},
}

// Rates is the USPS table effective 2025-07-13, as the hub ships it.
var Rates = protocol.RateTable{
	Version:   "usps-2025-07-13",
	Effective: "2025-07-13",
	Classes: []protocol.RateClass{
		{Class: "1100", Name: "Letter", Print: "FIRST-CLASS", FirstOunce: 780, AdditionalOunce: 290, MaxWeightMg: 99_223},
		{Class: "1200", Name: "Postcard", Print: "FIRST-CLASS CARD", FirstOunce: 610, MaxWeightMg: 28_349},
		{Class: "1300", Name: "Large envelope", Print: "FIRST-CLASS FLAT", FirstOunce: 1630, AdditionalOunce: 270, MaxWeightMg: 368_543},
		{Class: "2100", Name: "International letter", Print: "FIRST-CLASS INTL", FirstOunce: 1700, MaxWeightMg: 28_349},
	},
}

// PatentWebStampRequest is the patent's own request example.
const PatentWebStampRequest = `<server.bp_RequestWebStampParams>
    <LoginID>TestPrint</LoginID>
    <Amount>330</Amount>
    <RateClass>1100</RateClass>
    <FIM>0</FIM>
    <SerialNumber>1966-F8CF</SerialNumber>
    <CCNameOnCard>Joe Customer</CCNameOnCard>
    <CCNumber>0000111122223333</CCNumber>
    <CCExp>0401</CCExp>
</server.bp_RequestWebStampParams>`

// PatentIndicium is the patent's own <Indicium> example. Its Matrix is the
// patent's 89-byte legacy DSA layout, wrapped across lines as printed.
const PatentIndicium = `<Indicium>
  <MeterNumber>042N50000061</MeterNumber>
  <RateClass>1100</RateClass>
  <FIM>0</FIM>
  <LPO>Warrenton, VA</LPO>
  <Amount>330</Amount>
  <Matrix>AgFA4gEAMDQyTr3w+gIikQEAAEoBAP8uMQEAAAAA
  Hh0AAACuBwAAAAAesQ0AMTEwMKHVkp9AoLIvCxwwwowCZT35n5nxxFKfC4VU6
  s3i22eQbgPaFQCH53g=</Matrix>
</Indicium>`
