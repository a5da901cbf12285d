package httpapi

// InvalidUTF8Field exposes invalidUTF8Field to the black-box tests.
var InvalidUTF8Field = invalidUTF8Field
