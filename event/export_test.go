package event

// Exported for the tests of package event_test.
var (
	ContractKeys       = contractKeys
	CaseVariantPattern = caseVariantPattern
)
